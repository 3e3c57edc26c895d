"""Mirrors: tell another model registry about each new version and alias move, for teams that run one.

The local registry stays the record (the versions, the log, rollback); a mirror copies what happened, after it
happened. :class:`MLflowMirror` mirrors to MLflow's model registry (``pip install mlflow``). W&B artifacts are not
mirrored: nothing here writes to W&B.

Example:
    >>> mirror = MLflowMirror(f"sqlite:///{tmp_path}/mlflow.db", artifact_location=(tmp_path / "mlruns").as_uri())
    >>> registry = Registry(tmp_path / "registry", mirrors=[mirror])          # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ldoctor.registry.registry import Version

#: The tag holding the ldoctor version id on each MLflow run and model version.
VERSION_TAG = "ldoctor.version"


class Mirror(Protocol):
    """What :class:`~ldoctor.registry.Registry` calls after writing a change (a failure is raised to its caller)."""

    def on_register(self, version: Version) -> None:
        """A new version was registered (not called again when the same bytes are registered twice)."""

    def on_alias(self, name: str, version: Version) -> None:
        """Alias ``name`` now points to ``version`` (a promotion or a rollback)."""


class MLflowMirror:
    """Mirror to MLflow's model registry: each version becomes a run holding ``model.ckpt`` and ``card.json`` and a
    version of the registered model ``model_name`` tagged ``ldoctor.version``; each alias move sets the same MLflow
    alias (``MlflowClient.set_registered_model_alias``).

    Args:
        tracking_uri: the MLflow tracking and registry store, e.g. ``sqlite:///path/mlflow.db``.
        model_name: the registered model's name.
        experiment: the experiment holding the runs (created if absent).
        artifact_location: where a new experiment stores artifacts (a ``file://`` URI); default MLflow's.
    """

    def __init__(self, tracking_uri: str, model_name: str = "ldoctor", experiment: str = "ldoctor-registry",
                 artifact_location: str | None = None) -> None:
        from mlflow import MlflowClient  # noqa: PLC0415 (an optional dependency)

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.model_name = model_name
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (found.experiment_id if found is not None else
                              self.client.create_experiment(experiment, artifact_location=artifact_location))
        if not self.client.search_registered_models(filter_string=f"name = '{model_name}'"):
            self.client.create_registered_model(model_name)

    def on_register(self, version: Version) -> None:
        run = self.client.create_run(self.experiment_id, run_name=version.id, tags={VERSION_TAG: version.id})
        run_id = run.info.run_id
        self.client.log_artifact(run_id, str(version.path), artifact_path="model")
        self.client.log_dict(run_id, version.card, "model/card.json")
        self.client.set_terminated(run_id)
        self.client.create_model_version(self.model_name, source=f"{run.info.artifact_uri}/model", run_id=run_id,
                                         tags={VERSION_TAG: version.id})

    def on_alias(self, name: str, version: Version) -> None:
        self.client.set_registered_model_alias(self.model_name, name, self.model_version(version.id))

    def model_version(self, version_id: str) -> str:
        """The MLflow model version number mirroring ldoctor version ``version_id``.

        Raises:
            LookupError: never mirrored (registered before this mirror was attached), naming it.
        """
        found = self.client.search_model_versions(f"name = '{self.model_name}' and tags.`{VERSION_TAG}` = "
                                                  f"'{version_id}'")
        if not found:
            raise LookupError(f"{version_id}: not in MLflow's registered model {self.model_name!r}; it was "
                              "registered before this mirror was attached: call on_register with it first")
        return str(found[0].version)
