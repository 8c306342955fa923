import gc

import pytest
import torch

from repcam.data.base import DataError
from repcam.data.partsworld import PartsWorld
from repcam.models.backbones import Preprocess
from repcam.models.train import ImageCache


class _Broken(PartsWorld):
    def image(self, i):
        if i == 2:
            raise DataError("image 2 is unreadable")
        return super().image(i)


PRE = Preprocess(48, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_spilled_cache_gives_the_same_tensors_as_the_in_memory_one(tmp_path):
    ds = _Broken("val", num_images=6, image_size=40)
    mem, disk = ImageCache(ds, PRE, crop=False), ImageCache(ds, PRE, crop=False, spill_dir=tmp_path / "spill")
    order = [5, 0, 2, 3]
    assert mem.ok(order) == disk.ok(order) == [5, 0, 3]
    assert disk.bad.keys() == {2} and "unreadable" in disk.bad[2]
    assert disk.ok([3, 1]) == [3, 1]  # 3 again: not stored twice
    ids = [1, 3, 0, 5]
    assert torch.equal(disk.stack(ids), torch.stack([PRE.to_uint8(ds.image(i)) for i in ids]))
    assert torch.equal(disk.stack([0]), mem.stack([0]))
    assert disk.stack([]).shape == (0, 3, 48, 48)


def test_spill_file_is_anonymous_and_closed_with_the_cache(tmp_path):
    ds = PartsWorld("val", num_images=3, image_size=40)
    cache = ImageCache(ds, PRE, crop=True, spill_dir=tmp_path)
    cache.ok(range(3))
    f = cache._file
    assert list(tmp_path.iterdir()) == []  # nothing left behind after a kill either
    del cache
    gc.collect()
    assert f.closed


def test_spilled_cache_keeps_no_image_in_memory(tmp_path):
    cache = ImageCache(PartsWorld("val", num_images=4, image_size=40), PRE, crop=False, spill_dir=tmp_path)
    cache.ok(range(4))
    assert cache._cache == {}
    with pytest.raises(KeyError):
        cache.stack([7])
