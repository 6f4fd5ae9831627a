"""Architecture registry: builds the nn.Module a state-dict is loaded into.

`torchvision/<name>` comes from torchvision and `timm/<name>` from timm (never with pretrained weights); any
other `<namespace>/<name>` comes from the `prunekit.architectures` entry-point group, whose entry point
`<namespace>` is a dict name -> callable.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from importlib import metadata
from typing import Any

from torch import nn

from worker.engine.errors import InvalidModelError

__all__ = ["ENTRY_POINT_GROUP", "build_architecture", "known_architectures"]

ENTRY_POINT_GROUP = "prunekit.architectures"
log = logging.getLogger(__name__)

# Keyword arguments that would make torchvision download pretrained weights; uploads bring their own weights.
_WEIGHT_KWARGS = ("weights", "weights_backbone", "pretrained", "pretrained_backbone")
# timm keyword arguments that would fetch or read weights from elsewhere than the upload.
_TIMM_WEIGHT_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def _namespace_registry(namespace: str) -> dict[str, Callable[..., nn.Module]] | None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name != namespace:
            continue
        try:
            registry = ep.load()
        except Exception as exc:  # a broken plugin is a deployment problem, but say which one
            raise InvalidModelError(f"architecture namespace '{namespace}' could not be loaded: {exc}") from exc
        if not isinstance(registry, dict):
            raise InvalidModelError(
                f"entry point '{namespace}' of group {ENTRY_POINT_GROUP} must be a dict of name -> callable"
            )
        return registry
    if namespace == "prunekit":
        # The built-ins work even when the package metadata (entry points) is not installed, e.g. from a checkout.
        from worker.engine.models.builtin import ARCHITECTURES

        return ARCHITECTURES
    return None


def _namespaces() -> list[str]:
    names = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names | {"prunekit", "timm", "torchvision"})


def known_architectures(namespace: str | None = None, limit: int | None = None) -> list[str]:
    """Names of buildable architectures ('ns/name'), optionally of one namespace only."""
    names: list[str] = []
    for ns in [namespace] if namespace else _namespaces():
        if ns == "torchvision":
            import torchvision

            names += [f"torchvision/{n}" for n in sorted(torchvision.models.list_models())]
        elif ns == "timm":
            import timm

            names += [f"timm/{n}" for n in timm.list_models()]
        else:
            try:
                registry = _namespace_registry(ns)
            except InvalidModelError:
                continue
            names += [f"{ns}/{n}" for n in sorted(registry or {})]
    return names[:limit] if limit else names


def _build_torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models()
    if name not in available:
        close = [n for n in sorted(available) if n.startswith(name[:4])][:8] or sorted(available)[:8]
        raise InvalidModelError(f"unknown architecture 'torchvision/{name}'; torchvision has e.g. {', '.join(close)}")
    builder = torchvision.models.get_model_builder(name)
    extra: dict[str, Any] = {}
    # Detection models default weights_backbone to ImageNet weights, which would be downloaded: pin it to None.
    if "weights_backbone" in inspect.signature(builder).parameters:
        extra["weights_backbone"] = None
    return torchvision.models.get_model(name, weights=None, **extra, **kwargs)


def _build_timm(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"{name[:4]}*")[:8] or timm.list_models()[:8]
        raise InvalidModelError(f"unknown architecture 'timm/{name}'; timm has e.g. {', '.join(close)}")
    bad = [k for k in _TIMM_WEIGHT_KWARGS if k in kwargs]
    if bad:
        raise InvalidModelError(f"timm kwargs may not set {', '.join(bad)}: the uploaded file provides the weights")
    return timm.create_model(name, pretrained=False, **kwargs)


def build_architecture(name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build `namespace/name` with random weights; raises InvalidModelError for unknown names or bad kwargs."""
    kwargs = dict(kwargs or {})
    if "/" not in name:
        raise InvalidModelError(
            f"architecture '{name}' must look like 'namespace/name', "
            "e.g. 'torchvision/resnet18' or 'prunekit/digits_cnn'"
        )
    namespace, arch = name.split("/", 1)
    bad = [k for k in _WEIGHT_KWARGS if k in kwargs]
    if bad:
        raise InvalidModelError(
            f"architecture kwargs may not set {', '.join(bad)}: the uploaded file provides the weights"
        )
    try:
        if namespace == "torchvision":
            module = _build_torchvision(arch, kwargs)
        elif namespace == "timm":
            module = _build_timm(arch, kwargs)
        else:
            registry = _namespace_registry(namespace)
            if registry is None:
                raise InvalidModelError(
                    f"unknown architecture namespace '{namespace}' (in '{name}'); known namespaces: "
                    f"{', '.join(_namespaces())}"
                )
            if arch not in registry:
                raise InvalidModelError(
                    f"unknown architecture '{name}'; '{namespace}' has: {', '.join(sorted(registry)[:20])}"
                )
            module = registry[arch](**kwargs)
    except InvalidModelError:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidModelError(f"architecture '{name}' rejected kwargs {kwargs}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise InvalidModelError(f"architecture '{name}' did not build an nn.Module (got {type(module).__name__})")
    log.debug("built architecture %s with %s", name, kwargs)
    return module
