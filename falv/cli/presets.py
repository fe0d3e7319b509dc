"""``falv presets``: the named model sizes with measured parameters and GFLOPs."""

from __future__ import annotations

import click

from falv.config import ATTENTION_TYPES


@click.command()
@click.option("--attention", "attention_type", type=click.Choice(ATTENTION_TYPES),
              default="divided_space_time", show_default=True,
              help="Attention scheme to count for.")
@click.option("--labels", "num_labels", default=400, show_default=True, help="Head size to count with.")
def presets(attention_type: str, num_labels: int) -> None:
    """Print every preset: clip shape, width, depth, parameters and GFLOPs per clip."""
    from falv.model.flops import count_flops, count_parameters
    from falv.model.presets import PRESETS, preset

    click.echo(f"{'preset':8} {'clip':>10} {'dim':>5} {'layers':>6} {'heads':>5} {'params(M)':>10} {'GFLOPs':>9}")
    for name in PRESETS:
        cfg = preset(name, attention_type=attention_type, id2label={i: str(i) for i in range(num_labels)})
        click.echo(
            f"{name:8} {cfg.num_frames:>3}x{cfg.image_size:<6} {cfg.hidden_size:>5} {cfg.num_hidden_layers:>6} "
            f"{cfg.num_attention_heads:>5} {count_parameters(cfg) / 1e6:>10.1f} {count_flops(cfg) / 1e9:>9.1f}"
        )
    click.echo("GFLOPs: one forward pass of one clip, a multiply-add counted as 2 FLOPs (torch's counter).")
