"""fp16_range.py on its own: counts of gradient elements below fp16's normal range and above its largest."""

import math

import torch

from gradcheck_cli.measure.fp16_range import FP16_LARGEST, FP16_SMALLEST_NORMAL, Fp16Ranges


def test_elements_are_counted_in_fp16s_ranges_with_the_loss_scale_taken_into_account():
    ranges = Fp16Ranges()
    scale = 4.0
    ranges.start_pass(torch.float16, scale)
    grad = torch.tensor(
        [0.0, FP16_SMALLEST_NORMAL, FP16_SMALLEST_NORMAL * scale * 2, FP16_LARGEST * scale * 2, math.nan]
    )
    ranges.count(3, grad)
    ranges.count(3, torch.tensor([-1.0]))
    host = torch.cat([counts for _, counts in ranges.counts]).tolist()
    # under: positive but at or below the scaled smallest normal; over: above the scaled largest; all but NaN
    assert ranges.unpack([99.0, *host], 1) == {3: (1.0, 1.0, 5.0)}
