"""Dashboard views, one module per page family; each view is access check + selector/service + template."""
