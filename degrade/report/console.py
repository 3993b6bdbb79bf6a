"""Rich console summary (placeholder; replaced by the full renderer)."""
from rich.console import Console


def render(d, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]verdict:[/bold] {d.verdict['layer']} ({d.verdict['confidence']}) {d.verdict['headline']}")
    for layer, rep in d.layers.items():
        console.print(f"  {layer.value}: {rep.status} {rep.reason}")
    for f in d.findings:
        console.print(f"  {f.code} {f.severity.value} {f.message}")
