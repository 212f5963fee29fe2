"""The product browser: a web page over a product folder, served by ``ssm-spark serve --product``.

A Leaflet map of a date's SSM (Web Mercator tiles rendered server-side from the date's VRT with
rio-tiler, in the quicklooks' colour map; NaN transparent), the QC classes on demand, a slider over
the committed dates (and the point service's dates without product), and a click that draws the
cell's series with its 5-95 % band from the Parquet (on a date without product, the point
retrieval). Everything the page loads is in ``static/`` (Leaflet vendored under ``static/vendor/``,
no CDN). Modules:

- :mod:`.folder`: :class:`~.folder.ProductFolder`, the committed dates, a date's VRT, a cell's rows.
- :mod:`.tiles`: :class:`~.tiles.TileRenderer`, the PNG tiles (colour map, QC classes).
- :mod:`.routes`: :func:`router`, the FastAPI routes under ``/browse`` and their parameter checks.

Python::

    from fastapi import FastAPI
    from ssm_spark import browser
    app = FastAPI()
    app.include_router(browser.router(Path("out/demo/product"), service=None))
"""

from ssm_spark.browser.routes import PREFIX, STATIC, router

__all__ = ["router", "PREFIX", "STATIC"]
