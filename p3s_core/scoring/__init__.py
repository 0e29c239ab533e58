"""Subject scores as DreamBench reports them: CLIP-I, CLIP-T and DINO (our addition to the pack).

* :mod:`.protocol`: the pinned protocol (backbones, files, preprocessing, scaling, references);
* :mod:`.preprocess`: images to each backbone's pixels, as the reference implementations do;
* :mod:`.metrics`: the cosine maths on embeddings;
* :mod:`.backbones`: the two backbones loaded with ``transformers`` from a file or a folder;
* :mod:`.subject_score`: :func:`~.subject_score.score_subject`, images in, scores out, for the
  node and for a batch run;
* :mod:`.report`: the scores as a markdown table and a chart image.

Nothing here imports ComfyUI.
"""
