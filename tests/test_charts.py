"""The pages' figures stay readable from 2 to 50 classes and mark the user's place."""

from core.advice import cases
from pages._charts import confusion_heatmap, decision_matrix, network_diagram


def test_confusion_matrix_writes_counts_for_few_classes_only() -> None:
    small = confusion_heatmap([[5, 1], [0, 6]], ["cat", "dog"])
    large = confusion_heatmap([[1] * 50 for _ in range(50)], [f"class {i}" for i in range(50)])
    assert small.data[0].texttemplate == "%{text}"
    assert large.data[0].texttemplate is None  # 2,500 numbers would be unreadable
    assert small.layout.yaxis.autorange == "reversed"  # rows read top-down, true classes
    assert large.layout.height > small.layout.height


def test_decision_matrix_highlights_the_chosen_case_and_places_the_user() -> None:
    figure = decision_matrix(500_000, "different", chosen_case=4, dividing_line=10_000)
    highlighted = [a.text for a in figure.layout.annotations if a.font.color == "#FFFFFF"]
    assert highlighted == ["<b>Case 4</b><br>fine-tuning or training from scratch"]
    star = figure.data[0]
    assert star.x == (1.5,) and 5 < star.y[0] < 6


def test_network_diagram_draws_one_box_per_layer_in_the_case_colours() -> None:
    layers = cases.CASES[2].to_dict()["layers"]
    figure = network_diagram(layers)
    boxes = [shape for shape in figure.layout.shapes if shape.type == "rect"]
    assert len(boxes) == len(layers)
    assert sum(shape.line.dash == "dash" for shape in boxes) == list(layers.values()).count("removed")
