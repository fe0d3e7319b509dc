"""``falv presets``: the named model sizes with measured parameters and GFLOPs."""

from __future__ import annotations

import click

from falv.config import ATTENTION_TYPES


@click.command()
@click.option("--attention", "attention_type", type=click.Choice(ATTENTION_TYPES),
              default="divided_space_time", show_default=True,
              help="Attention scheme to count FAL's presets for.")
@click.option("--labels", "num_labels", default=400, show_default=True, help="Head size to count with.")
@click.option("--family", "family_name", default="all", show_default=True,
              help="Which model family's presets: fal, or another family (falv presets --family all lists them).")
def presets(attention_type: str, num_labels: int, family_name: str) -> None:
    """Print every preset: clip shape, width, depth, parameters and GFLOPs per clip; with
    --family, the presets of that model family (VideoMAE, the PySlowFast zoo, X3D, TSM, ...)."""
    from falv.hub.families import families
    from falv.model.flops import count_flops, count_parameters
    from falv.model.presets import PRESETS, preset

    known = {f.name: f for f in families()}
    if family_name not in ("all", *known):
        raise click.BadParameter(f"unknown family {family_name!r}; families: all, {', '.join(known)}",
                                 param_hint="--family")
    labels = {i: str(i) for i in range(num_labels)}
    if family_name in ("all", "fal"):
        click.echo(f"{'preset':8} {'clip':>10} {'dim':>5} {'layers':>6} {'heads':>5} {'params(M)':>10} {'GFLOPs':>9}")
        for name in PRESETS:
            cfg = preset(name, attention_type=attention_type, id2label=labels)
            click.echo(
                f"{name:8} {cfg.num_frames:>3}x{cfg.image_size:<6} {cfg.hidden_size:>5} {cfg.num_hidden_layers:>6} "
                f"{cfg.num_attention_heads:>5} {count_parameters(cfg) / 1e6:>10.1f} {count_flops(cfg) / 1e9:>9.1f}"
            )
    others = [f for f in known.values() if f.presets and (family_name in ("all", f.name))]
    if others:
        if family_name == "all":
            click.echo("")
        click.echo(f"{'family':10} {'preset':22} {'clip':>10} {'params(M)':>10} {'GFLOPs':>9}")
        for fam in others:
            for name in fam.presets:
                cfg = fam.preset(name, id2label=labels)
                click.echo(f"{fam.name:10} {name:22} {cfg.num_frames:>3}x{cfg.image_size:<6} "
                           f"{count_parameters(cfg, model_class=fam.model_class) / 1e6:>10.1f} "
                           f"{count_flops(cfg, model_class=fam.model_class) / 1e9:>9.1f}")
    click.echo("GFLOPs: one forward pass of one clip, a multiply-add counted as 2 FLOPs (torch's counter).")
