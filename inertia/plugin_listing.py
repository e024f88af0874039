"""What `inertia plugins` shows: every plugin with its description and parameters."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .core.params import describe_params
from .registry import Registry


def describe_registry(registry: Registry) -> dict[str, list[dict[str, Any]]]:
    """Every plugin by kind, and the third-party plugins left out with the reason (`problems`)."""
    backbones = [
        {
            "name": name,
            "description": cls.description,
            "modes": list(cls.modes),
            "default_models": dict(cls.default_models),
            "guidance_targets": list(cls.guidance_targets),
            "source": registry.backbones.sources[name],
        }
        for name, cls in registry.backbones.plugins.items()
    ]

    def with_params(table) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "description": cls.description,
                "params": [asdict(p) for p in describe_params(cls.Params)],
                "source": table.sources[name],
                **({"weights": cls.weights} if hasattr(cls, "weights") else {}),
            }
            for name, cls in table.plugins.items()
        ]

    return {
        "backbones": backbones,
        "interventions": with_params(registry.interventions),
        "metrics": with_params(registry.metrics),
        "problems": [asdict(problem) for problem in registry.problems],
    }


def format_listing(listing: dict[str, list[dict[str, Any]]]) -> str:
    lines: list[str] = []
    lines.append("backbones:")
    for b in listing["backbones"]:
        lines.append(f"  {b['name']}  [{b['source']}]  {b['description']}")
        lines.append(f"      modes: {', '.join(b['modes'])}; guidance: {', '.join(b['guidance_targets'])} "
                     f"(default: {b['guidance_targets'][0]})")
        for mode, model in b["default_models"].items():
            lines.append(f"      {mode} checkpoint: {model} (without --model: built-in smoke-test model)")
    for kind in ("interventions", "metrics"):
        lines.append(f"{kind}:" + ("" if listing[kind] else " none"))
        for plugin in listing[kind]:
            lines.append(f"  {plugin['name']}  [{plugin['source']}]  {plugin['description']}")
            if plugin.get("weights"):
                lines.append(f"      weights: {plugin['weights']}")
            for p in plugin["params"]:
                default = "(required)" if p["required"] else repr(p["default"])
                lines.append(f"      {p['name']}: {p['type']} = {default}  (allowed: {p['allowed']})  {p['description']}")
    if listing.get("problems"):
        lines.append("plugins left out (the others work):")
        for problem in listing["problems"]:
            name = f" ({problem['name']})" if problem["name"] else ""
            lines.append(f"  {problem['plugin']}{name}: {problem['error']}")
    return "\n".join(lines)
