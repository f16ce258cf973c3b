"""Quality: how far each mechanism is from softmax attention, and what it can still learn."""
