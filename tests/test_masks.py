import numpy as np
import pytest

from tfp_flows import masks


def test_checkerboard_image_alternates_over_space_and_is_shared_by_channels():
    m = masks.checkerboard((4, 6, 3))
    assert m.shape == (4, 6, 3) and m.dtype == np.float32
    assert (m[..., 0] == m[..., 2]).all()
    assert m[0, 0, 0] == 1 and m[0, 1, 0] == 0 and m[1, 0, 0] == 0 and m[1, 1, 0] == 1
    assert m.sum() == m.size / 2
    np.testing.assert_array_equal(masks.checkerboard((4, 6, 3), parity=1), 1 - m)


def test_vector_masks_alternate_and_halve():
    np.testing.assert_array_equal(masks.checkerboard([5]), [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(masks.checkerboard([5], parity=1), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(masks.channel([5]), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(masks.channel([4], parity=1), [0, 0, 1, 1])


def test_channel_mask_on_images_is_constant_over_space():
    m = masks.channel((2, 3, 4))
    np.testing.assert_array_equal(m[1, 2], [1, 1, 0, 0])
    assert (m == m[:1, :1]).all()


@pytest.mark.parametrize("shape", [(2, 2), (2, 2, 2, 2), ()])
def test_masks_reject_other_ranks(shape):
    with pytest.raises(ValueError, match="rank"):
        masks.checkerboard(shape)


def test_masks_reject_degenerate_sizes_and_parity():
    with pytest.raises(ValueError, match="2 channels"):
        masks.channel((4, 4, 1))
    with pytest.raises(ValueError, match="parity"):
        masks.channel((4,), parity=2)
    with pytest.raises(ValueError, match="non-positive"):
        masks.checkerboard((0, 4, 1))
