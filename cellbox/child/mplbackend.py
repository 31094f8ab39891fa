"""The matplotlib backend of sessions (loaded by matplotlib only; see ``figures``).

Agg canvases, and ``show()`` sends the open figures as ``image/png`` displays.
"""

from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from cellbox.child.figures import flush

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


def show(*args: object, **kwargs: object) -> None:
    """``plt.show()``: send every open figure and close it."""
    flush()
