"""Train, validate, test or predict with ldoctor: ``python train.py fit --config configs/smoke.yaml``."""

from ldoctor.cli import main

if __name__ == "__main__":
    main()
