"""Ray Serve's entry point: ``import_path: cortex_ray.app:build``. Nothing in cortex-ray imports it.

``args`` name the spec file and the API (:class:`~cortex_ray.application.BuildArgs`)::

    applications:
      - name: iris
        route_prefix: /iris
        import_path: cortex_ray.app:build
        args: {spec: /path/to/cortex.yaml, api: iris}

The spec is validated where the builder runs, before any replica starts. A project sent to a
cluster (``cortex-ray deploy``) is the application's ``runtime_env.working_dir``: then
``args.spec`` is relative to it and ``args.shipped`` is set.
"""

from ray.serve import Application

from cortex_ray.application import BuildArgs, build_application

__all__ = ["build"]


def build(args: BuildArgs) -> Application:
    return build_application(args)
