"""MONAI-style transforms (deterministic first, then random) and the one preprocessing cache.

- :mod:`~ldoctor.transforms.radiograph`: radiograph decode/resize/quantise, 2D augmentation, normalisation;
- :mod:`~ldoctor.transforms.ct`: nodule-centred HU cubes, 3D augmentation, 2.5D views;
- :mod:`~ldoctor.transforms.radiomics`: size, shape and density measured on a nodule's HU cube;
- :mod:`~ldoctor.transforms.cache`: where the deterministic part is kept (memory, disk, none).
"""
