"""Everything vislang draws: attention figures, explanation heat maps, the captioning report, training charts,
search contact sheets and the fusion experiment's figure.

viz depends only on data, errors and utils: it takes the objects it draws (captioners, evaluations, search
hits) by what they provide (small :class:`typing.Protocol` classes), not by importing their modules.
"""

from vislang.viz.attention import attention_figure, attention_overlay, save_figure
from vislang.viz.charts import PALETTE, Chart, Series, render_chart, render_charts, save_charts
from vislang.viz.fusion import save_fusion_plot
from vislang.viz.heatmap import heatmap_figure, heatmap_overlay, png_bytes, stack_figures
from vislang.viz.report import write_report
from vislang.viz.sheet import contact_sheet, save_contact_sheet, sheet_size

__all__ = [
    "PALETTE",
    "Chart",
    "Series",
    "attention_figure",
    "attention_overlay",
    "contact_sheet",
    "heatmap_figure",
    "heatmap_overlay",
    "png_bytes",
    "render_chart",
    "render_charts",
    "save_charts",
    "save_contact_sheet",
    "save_figure",
    "save_fusion_plot",
    "sheet_size",
    "stack_figures",
    "write_report",
]
