"""Reports: which artifacts (select), their tables (collect), and the page with its figures (page)."""
