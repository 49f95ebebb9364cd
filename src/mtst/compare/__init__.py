"""``mtst compare``: strategies run side by side on the user's data, and a report that recommends one.

:mod:`~mtst.compare.sweep` plans and runs the sweep and measures the encoders; :mod:`~mtst.compare.summary`
averages its figures per strategy; :mod:`~mtst.compare.report` turns them into sentences and sections,
which :mod:`~mtst.compare.render` writes as Markdown and HTML beside :mod:`~mtst.compare.plots`' PNGs.
"""
