"""The pages' figures stay readable from 2 to 50 classes and mark the user's place."""

from core.advice import cases
from core.analysis.record import RaceContender
from pages._analysis_charts import MUTED, race_chart
from pages._charts import HIGHLIGHT, confusion_heatmap, decision_matrix, network_diagram


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
    assert highlighted == ["<b>Case 4</b><br>fine-tuning or<br>training from scratch"]
    star = figure.data[0]
    assert star.x == (1.5,) and 5 < star.y[0] < 6


def test_every_case_name_fits_its_cell_in_a_half_width_column() -> None:
    figure = decision_matrix(500, "different", chosen_case=2, dividing_line=10_000)
    lines = [line for label in figure.layout.annotations for line in label.text.split("<br>")]
    assert "truncated feature" in lines and max(map(len, lines)) <= 22


def test_network_diagram_draws_one_box_per_layer_in_the_case_colours() -> None:
    layers = cases.CASES[2].to_dict()["layers"]
    figure = network_diagram(layers)
    boxes = [shape for shape in figure.layout.shapes if shape.type == "rect"]
    assert len(boxes) == len(layers)
    assert sum(shape.line.dash == "dash" for shape in boxes) == list(layers.values()).count("removed")


def test_classes_named_with_digits_stay_categories_on_every_chart() -> None:
    """The digits sample's classes are 0-9: on a numeric axis its bars and labels went missing."""
    from pages._charts import counts_chart, top_classes_chart

    digits = [str(d) for d in range(10)]
    confusion = confusion_heatmap([[1] * 10] * 10, digits)
    assert confusion.layout.xaxis.type == confusion.layout.yaxis.type == "category"
    top = top_classes_chart([("7", 0.9), ("1", 0.1)])
    assert top.layout.yaxis.type == "category" and list(top.data[0].y) == ["1", "7"]
    assert counts_chart({"train": dict.fromkeys(digits, 5)}).layout.xaxis.type == "category"


def test_accuracy_axes_run_from_0_to_100_percent_and_epochs_are_whole() -> None:
    from pages._charts import curves_by_run

    fig = curves_by_run(
        {"faces.zip · case 1": [{"epoch": 1, "val_accuracy": 0.61}, {"epoch": 2, "val_accuracy": 0.64}]}
    )
    assert fig.layout.yaxis.range == (0, 1.02) and list(fig.layout.yaxis.tickvals) == [0, 0.25, 0.5, 0.75, 1]
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d"
    assert fig.data[0].name == "faces.zip · case 1"


def test_the_backbone_scatter_reads_plainly() -> None:
    from pages._charts import accuracy_vs_cost

    rows = [
        {"name": n, "family": f, "top1": t, "gflops": g, "params": p, "input_size": 224, "year": 2019}
        for n, f, t, g, p in (
            ("a1", "ResNet", 70.0, 1.8, 11e6),
            ("b1", "VGG", 72.0, 7.6, 138e6),
            ("c1", "EfficientNet", 77.0, 0.4, 5e6),
        )
    ]
    fig = accuracy_vs_cost(rows, chosen="b1")
    colours = [t.marker.color for t in fig.data if not t.name.startswith("chosen")]
    assert len(set(colours)) == 3  # one colour per family
    assert "1" in fig.layout.xaxis.ticktext and "10" in fig.layout.xaxis.ticktext  # not 2e0
    assert fig.data[-1].name == "chosen: b1" and fig.data[-1].x == (7.6,)
    assert "bubble area: parameters" in fig.layout.legend.title.text


def test_the_star_never_sits_on_a_case_label() -> None:
    for images, similarity in ((316, "similar"), (500_000, "different"), (3_000, "similar")):
        figure = decision_matrix(images, similarity, chosen_case=1, dividing_line=10_000)
        star_x, star_y = figure.data[0].x[0], figure.data[0].y[0]
        for label in figure.layout.annotations:
            same_cell = abs(label.x - star_x) < 0.5
            assert not same_cell or abs(label.y - star_y) >= 0.8, (images, label.text)


def test_the_race_chart_shows_each_contenders_spread_time_and_fate_with_the_advice_in_blue() -> None:
    def entry(label: str, accuracy: float | None, **fields: object) -> RaceContender:
        shown = {"spread": 0.02, "seconds": 30.0, "versus_advice": "lost", **fields}
        return RaceContender(label=label, accuracy=accuracy, **shown)

    figure = race_chart([
        entry("case 1", 0.70), entry("case 2", 0.90, advised=True, versus_advice="won"),
        entry("case 3", 0.60, dropped_after=1), entry("case 4", None),
    ])  # fmt: skip

    bars = figure.data[0]
    assert list(bars.x) == ["case 1", "case 2", "case 3"]  # a contender with no score yet waits
    assert list(bars.marker.color) == [MUTED, HIGHLIGHT, MUTED] and list(bars.error_y.array) == [0.02] * 3
    assert list(bars.text) == ["70.0% · 30 s · lost", "90.0% · 30 s", "60.0% · 30 s · dropped after epoch 1"]
