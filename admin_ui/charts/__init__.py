"""Server-drawn SVG charts for the console (issue 19): scales (:mod:`.scale`), geometry (:mod:`.figure`),
markup (:mod:`.svg`) and the usage charts built from rollup series (:mod:`.usage`)."""
