"""Method identity (repcam.method.methods): row names round-trip, the registries drive config choices and table order."""

import pytest

from repcam.method.methods import MAP_KINDS, SELECTIONS, VARIANTS, Method, paper_rows, selection_order
from repcam.reporting.tables import method_order


@pytest.mark.parametrize("name,method", [
    ("S-1+F", Method("S-1", "last")),
    ("S-1+A+F", Method("S-1", "A")),
    ("Rank-a+A+F[max]", Method("Rank-a", "A", "max")),
    ("Top-2+A+F[geomean]", Method("Top-2", "A", "geomean")),
    ("All contrast", Method("All", "last", source="contrast")),
    ("S-3 contrast+A", Method("S-3", "A", source="contrast")),
    ("Random+A+F & Grad-CAM", Method("Random", "A", with_gradcam=True)),
    ("Grad-CAM+A", Method(source="multiclass", baseline="Grad-CAM+A")),
    ("CBAM (Grad-CAM)", Method(source="trained", baseline="CBAM (Grad-CAM)")),
])
def test_row_names_round_trip(name, method):
    assert Method.parse(name) == method and method.name == name


@pytest.mark.parametrize("name", ["multiclass [gradcam, last]", "S-1+A", "", "S-1+A+F[median]"])
def test_names_no_method_writes_are_refused(name):
    assert Method.try_parse(name) is None
    with pytest.raises(ValueError):
        Method.parse(name)


def test_registries_are_the_config_choices_and_the_table_order():
    from repcam import config

    # The built-in selections come first, in the paper's order; modules in method/selections/ register after them.
    assert config.SELECTION_METHODS[:8] == ("random", "rank-a", "rank-b", "s1", "s2", "s3", "s4", "all")
    assert config.VARIANTS == ("max", "geomean", "contrast", "with-gradcam") == VARIANTS.keys()
    assert config.BASELINES == ("acol", "cbam")
    assert [SELECTIONS[k].display for k in SELECTIONS][:8] == ["Random", "Rank-a", "Rank-b", "S-1", "S-2", "S-3", "S-4", "All"]
    assert selection_order()[-4:] == ["Top-1", "Top-2", "Top-3", "Top-4"]
    assert list(MAP_KINDS) == ["CAM", "Grad-CAM", "Grad-CAM (mean of layers)", "LayerCAM", "Grad-CAM+A"]
    rows = ["S-1 contrast", "zz grid", "S-1+A+F", "Random+A+F[max]", "ACoL", "Random+F", "Grad-CAM", "S-1+F"]
    assert method_order(rows) == ["Grad-CAM", "ACoL", "Random+F", "S-1+F", "S-1+A+F", "Random+A+F[max]", "S-1 contrast", "zz grid"]
    assert [m.name for m in paper_rows("S-2")] == ["S-2+F", "S-2+A+F"]
