"""Decisions for campaign auto-pausing scripts: the ``may_pause`` rules evaluated on exact
partition state (``evaluate``), turned into safe pause / resume decisions (``engine``)."""
