"""Regional products: Parquet by date, tile COGs, VRT mosaics and quicklooks (``ssm-spark produce``).

``from ssm_spark.product.produce import produce`` (the run), :mod:`ssm_spark.product.cog` (tile COGs
and VRT mosaics), :mod:`ssm_spark.product.quicklook` (PNG quicklooks). Nothing is imported here, so
``ssm_spark.product.produce`` always names the module.
"""
