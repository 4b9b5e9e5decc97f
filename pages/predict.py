"""Predict: try a trained model on new images, with the preprocessing its run used."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st
from PIL import Image

from core import inert, jobs
from core.artifacts.card import ModelCard
from core.data import IngestError, decode_image
from core.jobs import Run, RunState
from pages._access import viewer
from pages._batch import batch_predictions
from pages._charts import top_classes_chart
from pages._common import data_name, focus_run, run_label
from pages._heatmaps import predict_heatmaps

if TYPE_CHECKING:
    from core.artifacts.predict import Predictor

THUMBNAIL = 512


@st.cache_resource(max_entries=4, show_spinner="Loading the model...")
def predictor(run_id: str) -> Predictor:
    """The run's model, loaded once per server for the images people try one at a time.

    Torch is imported here, on the first image, not when the page is opened: one image is one
    forward pass of a model already in memory (a zip of them is a job, ``pages._batch``).
    """
    from core.artifacts.predict import Predictor

    return Predictor(Run.open(run_id).model_dir)


@st.cache_data(max_entries=256, show_spinner=False)
def classify(run_id: str, file_id: str, _data: bytes) -> tuple[tuple[tuple[str, float], ...], Image.Image]:
    """Top classes of one upload and a thumbnail of it as the model saw it (upright, RGB),
    computed once per model and upload rather than on every rerun."""
    image = decode_image(_data)
    [prediction] = predictor(run_id).predict([image], top_k=5)
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return prediction.top, image


st.title("Predict")
done = [r for r in jobs.list_runs(viewer=viewer()) if r.state is RunState.DONE]
if not done:
    st.info("No finished run yet: train one on the **Train** page.")
    st.stop()

runs = {r.run_id: r for r in done}
wanted = st.query_params.get("run") or focus_run()
ids = list(runs)
run_id = st.selectbox(
    "Model",
    ids,
    index=ids.index(wanted) if wanted in ids else 0,
    format_func=lambda run: run_label(runs[run]),
    key="predict.model",
    help="Opens on the run you last looked at on Results or Train.",
)
focus_run(run_id)
card = ModelCard.read(Run.open(run_id).model_dir)
st.info(
    f"This model was trained on **{inert.markdown(data_name(runs[run_id]))}** and knows {len(card.labels)} classes: "
    f"{inert.markdown(', '.join(card.labels))}. It answers with one of them, whatever the image shows.",
    icon=":material/label:",
)
st.caption(f"Input {card.pre.crop} px")

uploads = st.file_uploader(
    "Images",
    type=["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"],
    accept_multiple_files=True,
    key="predict.images",
)
shots = []
if st.toggle(
    "Use the camera",
    key="predict.camera_on",
    help="Browsers allow the camera only over HTTPS or on localhost.",
):
    shot = st.camera_input("Take a photo", key="predict.camera")
    shots = [shot] if shot else []

for upload in [*(uploads or []), *shots]:
    try:
        top, thumbnail = classify(run_id, upload.file_id, upload.getvalue())
    except (IngestError, OSError) as exc:
        st.error(f"{inert.markdown(upload.name)}: {inert.markdown(exc)}")
        continue
    left, right = st.columns([1, 2])
    left.image(thumbnail, caption=inert.markdown(upload.name), width="stretch")
    with right:
        best, probability = top[0]
        st.markdown(f"### {inert.markdown(best)}  \n{probability:.1%} confident")
        st.plotly_chart(
            top_classes_chart(top),
            width="stretch",
            key=f"predict.bars_{upload.file_id}",
            config={"displayModeBar": False},
        )

if uploads or shots:
    st.subheader("Where the model looked")
    predict_heatmaps(run_id, [*(uploads or []), *shots], card.labels, key="predict.heatmap_class")

st.subheader("Many images at once")
batch_predictions(run_id)
