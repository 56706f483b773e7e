"""Discord components: the persistent buttons under results and the views that hold them."""
