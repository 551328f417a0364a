"""HTML views of `attribution.explain` records: no script, no network, inline CSS only.

`fragment(record)` is one synopsis as a `<div>` (for a web page that has the `CSS`), one row per
genre: its name, its probability as a bar, and the synopsis with every word highlighted on a
diverging scale (green raises the genre's probability, red lowers it; the colour's strength is
the attribution over the largest |attribution| of the synopsis, all its genres alike, so rows
compare). `page(records)` is a whole self-contained document.
"""

import html

CSS = """
.gj-explain { font: 15px/1.5 system-ui, sans-serif; margin: 0 0 2em; max-width: 60em; }
.gj-explain .text { font-style: italic; margin-bottom: .5em; }
.gj-explain .genre { display: grid; grid-template-columns: 11em 8em 1fr; gap: .8em;
  align-items: baseline; padding: .3em 0; border-top: 1px solid #ddd; }
.gj-explain .name { font-weight: 600; }
.gj-explain .bar { display: inline-block; width: 4.5em; height: .7em; background: #eee;
  vertical-align: middle; margin-right: .3em; }
.gj-explain .bar span { display: block; height: 100%; background: #3b6fb6; }
.gj-explain .w, .gj-legend .w { padding: 0 .15em; border-radius: 3px; }
.gj-legend { font: 13px system-ui, sans-serif; color: #555; margin-bottom: 1.5em; }
"""
POSITIVE, NEGATIVE = (22, 150, 70), (210, 40, 40)  # RGB of raising / lowering words.


def _word(word: str, value: float, scale: float) -> str:
  strength = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
  r, g, b = POSITIVE if value >= 0 else NEGATIVE
  return (f'<span class="w" style="background: rgba({r}, {g}, {b}, {0.85 * strength:.3f})" '
          f'title="{value:+.4f}">{html.escape(word)}</span>')


def fragment(record: dict) -> str:
  """One `attribution.explain` record as an HTML `<div class="gj-explain">` (needs `CSS`)."""
  genres = record['genres']
  scale = max((abs(a) for g in genres.values() for a in g['attributions']), default=0.0)
  rows = []
  for name, g in genres.items():
    p = g['probability']
    words = ' '.join(_word(w, a, scale) for w, a in zip(record['words'], g['attributions']))
    rows.append(f'<div class="genre"><span class="name">{html.escape(name)}</span>'
                f'<span><span class="bar"><span style="width: {100 * p:.1f}%"></span></span>'
                f'{p:.2f}</span><span>{words}</span></div>')
  return (f'<div class="gj-explain"><div class="text">{html.escape(record["text"])}</div>'
          + ''.join(rows) + '</div>')


def page(records: list[dict], title: str = 'Why these genres') -> str:
  """A self-contained HTML document of `records` (inline CSS, no script, no external file)."""
  legend = ('Integrated gradients of each genre\'s calibrated logit: '
            '<span class="w" style="background: rgba(22, 150, 70, .6)">green</span> words raise '
            'the genre\'s probability, <span class="w" style="background: rgba(210, 40, 40, .6)">'
            'red</span> words lower it; hover a word for its attribution.')
  body = '\n'.join(fragment(r) for r in records)
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<title>{html.escape(title)}</title><style>{CSS}</style></head><body>'
          f'<h1 style="font: 600 20px system-ui, sans-serif">{html.escape(title)}</h1>'
          f'<div class="gj-legend">{legend}</div>\n{body}\n</body></html>\n')
