"""Change the order of the products: linear attention (elu+1) and Performer (FAVOR+)."""
