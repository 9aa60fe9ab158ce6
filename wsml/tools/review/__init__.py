"""``wsml review``: a small local web page to complete a val set and to accept or reject the labels
find-missing suggests, saved in the run folder as decisions are made and exported as a new labels CSV
(plus Label Studio import JSON).

* :mod:`wsml.tools.review.state`  the items under review and the reviewer's decisions (``RUN/review/``)
* :mod:`wsml.tools.review.build`  items from a finished run: a stratified val sample scored by the model, or
  find-missing's ranked pairs
* :mod:`wsml.tools.review.export` the reviewed labels CSV and the Label Studio tasks
* :mod:`wsml.tools.review.server` the standard-library HTTP server (127.0.0.1 only) and ``page.html``
"""

from wsml.tools.review.export import export_review
from wsml.tools.review.state import MissingReview, ValReview, load_review

__all__ = ["MissingReview", "ValReview", "export_review", "load_review"]
