"""Server-drawn SVG charts for the console (issue 19): scales (:mod:`.scale`), geometry (:mod:`.figure`)
and the usage charts built from rollup series (:mod:`.usage`); ``templates/_chart.html`` draws them."""
