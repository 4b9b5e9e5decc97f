"""Transfer Lab's engine: advice, backbones, model surgery, data, training.

Nothing in this package imports streamlit; the pages call into it.
"""
