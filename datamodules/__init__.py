"""Lightning DataModules, one file per dataset family.

A top-level package so that ``class_path: datamodules.<family>.<Class>`` resolves from anywhere.
"""
