"""Predict: try a trained model on new images, with the preprocessing its run used."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from core import jobs
from core.artifacts.predict import Predictor
from core.data import IngestError, decode_image
from core.jobs import Run
from pages._access import viewer
from pages._common import escape

THUMBNAIL = 512


@st.cache_resource(max_entries=4, show_spinner="Loading the model...")
def predictor(run_id: str) -> Predictor:
    return Predictor(Run.open(run_id).model_dir)


@st.cache_data(max_entries=256, show_spinner=False)
def classify(run_id: str, file_id: str, _data: bytes) -> tuple[tuple[tuple[str, float], ...], Image.Image]:
    """Top classes of one upload and a thumbnail of it as the model saw it (upright, RGB),
    computed once per model and upload rather than on every rerun."""
    image = decode_image(_data)
    [prediction] = predictor(run_id).predict([image], top_k=5)
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return prediction.top, image


def top_classes_chart(top: tuple[tuple[str, float], ...]) -> go.Figure:
    labels = [label for label, _ in top][::-1]
    fig = go.Figure(
        go.Bar(
            x=[p for _, p in top][::-1],
            y=labels,
            orientation="h",
            text=[f"{p:.1%}" for _, p in top][::-1],
            textposition="auto",
        )
    )
    fig.update_layout(
        height=60 + 36 * len(top),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"range": [0, 1], "tickformat": ".0%"},
    )
    return fig


st.title("Predict")
done = [r for r in jobs.list_runs(viewer=viewer()) if r["state"] == "done"]
if not done:
    st.info("No finished run yet: train one on the **Train** page.")
    st.stop()

labels = {
    r["run_id"]: f"{r['run_id']} · {r['backbone']} · case {r['case']} · {(r['best_val_accuracy'] or 0):.0%}"
    for r in done
}
wanted = st.query_params.get("run")
ids = list(labels)
run_id = st.selectbox(
    "Model", ids, index=ids.index(wanted) if wanted in ids else 0, format_func=labels.get, key="model"
)
model = predictor(run_id)
st.caption(f"Classes: {escape(', '.join(model.labels))} · input {model.pre.crop} px")

uploads = st.file_uploader(
    "Images",
    type=["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"],
    accept_multiple_files=True,
    key="images",
)
shots = []
if st.toggle(
    "Use the camera", key="camera_on", help="Browsers allow the camera only over HTTPS or on localhost."
):
    shot = st.camera_input("Take a photo", key="camera")
    shots = [shot] if shot else []

for upload in [*(uploads or []), *shots]:
    try:
        top, thumbnail = classify(run_id, upload.file_id, upload.getvalue())
    except (IngestError, OSError) as exc:
        st.error(f"{escape(upload.name)}: {escape(exc)}")
        continue
    left, right = st.columns([1, 2])
    left.image(thumbnail, caption=escape(upload.name), width="stretch")
    with right:
        best, probability = top[0]
        st.markdown(f"### {escape(best)}  \n{probability:.1%} confident")
        st.plotly_chart(
            top_classes_chart(top),
            width="stretch",
            key=f"bars_{upload.file_id}",
            config={"displayModeBar": False},
        )
