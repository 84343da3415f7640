"""The figure finishing helper shared by every plot (sgdsde.analysis.plots)."""

from __future__ import annotations

import matplotlib.pyplot as plt

from sgdsde.analysis.plots import finish_figure


def test_finish_figure_titles_lays_out_writes_and_closes(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = tmp_path / "fig.png"
    out = finish_figure(fig, "a title", path, title_size=9)
    assert out is fig
    assert fig._suptitle.get_text() == "a title"
    assert fig._suptitle.get_fontsize() == 9
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]  # no temporary left


def test_finish_figure_without_path_or_title_keeps_the_figure_open():
    fig, _ = plt.subplots()
    try:
        assert finish_figure(fig, None, None) is fig
        assert fig._suptitle is None
        assert plt.fignum_exists(fig.number)
    finally:
        plt.close(fig)


def test_finish_figure_default_title_size():
    fig, _ = plt.subplots()
    try:
        finish_figure(fig, "t", None)
        assert fig._suptitle.get_fontsize() == 10.5
    finally:
        plt.close(fig)
