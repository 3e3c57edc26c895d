"""The small-input trunks the LIDC benchmark uses: the stem without its max-pool."""

from __future__ import annotations

import torch
import torchvision

from ldoctor.models.trunks import TRUNKS, build_trunk


def test_small_input_trunk_keeps_keys_and_halves_the_stem_stride(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    small = build_trunk("resnet18_smallinput", str(path)).eval()  # torchvision keys load strictly
    assert set(small.state_dict()) == set(build_trunk("resnet18").state_dict())
    assert TRUNKS["resnet18_smallinput"].stages == TRUNKS["resnet18"].stages
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert small.stem(x).shape == (2, 64, 16, 16)  # stride 2: a 32 px patch keeps 16 x 16 after the stem
        assert build_trunk("resnet18").stem(x).shape == (2, 64, 8, 8)  # the default trunk is unchanged
        # independent forward pass: torchvision's ResNet-18 with the max-pool skipped
        r = reference
        h = r.relu(r.bn1(r.conv1(x)))
        h = r.layer4(r.layer3(r.layer2(r.layer1(h))))
        expected = torch.flatten(r.avgpool(h), 1)
        torch.testing.assert_close(small(x), expected)
