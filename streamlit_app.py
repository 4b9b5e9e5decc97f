"""Transfer Lab: the app shell. Each page lives in ``pages/``; the work is done in ``core/``."""

import streamlit as st

st.set_page_config(page_title="Transfer Lab", page_icon=":material/model_training:", layout="wide")

PAGES = [
    st.Page("pages/advisor.py", title="Advisor", icon=":material/explore:", url_path="advisor", default=True),
    st.Page("pages/backbones.py", title="Backbones", icon=":material/hub:", url_path="backbones"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
]

page = st.navigation(PAGES)
with st.sidebar:
    st.caption("Transfer Lab · pick an approach, pick a network, train it on your images.")
page.run()
