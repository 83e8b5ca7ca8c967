"""Images and labels in, checked: tasks (the registry), readers (one per source), io (files, checks, caches,
splits), preprocess (tensors)."""
