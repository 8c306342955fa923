import numpy as np
import pytest

from repcam.store.spool import MapSpool


def test_maps_come_back_grouped_by_image_and_the_files_are_removed():
    rng = np.random.default_rng(0)
    written = {}
    with MapSpool() as spool:
        for c in range(3):  # written class by class, as evaluation does
            for i in (5, 1, 7):
                if (i + c) % 4:
                    for method in ("a", "b"):
                        m = rng.random((4, 6)).astype(np.float16)
                        spool.add(method, i, c, m)
                        written[(method, i, c)] = m
        assert spool.images() == [1, 5, 7] and spool.methods == ["a", "b"]
        for (method, i, c), m in written.items():
            np.testing.assert_array_equal(spool.maps_of(method, i)[c], m)
        assert spool.maps_of("a", 99) == {} and spool.maps_of("zz", 1) == {}
        assert {c for c in spool.maps_of("b", 7)} == {c for (mt, i, c) in written if mt == "b" and i == 7}
        with pytest.raises(ValueError, match="spool holds"):
            spool.add("a", 1, 0, np.zeros((2, 2)))
        d = spool.dir
    assert not d.exists()
