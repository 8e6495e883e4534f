"""The audio-visual branch's own steps: each clip's inputs from its frames and voice
(:mod:`.clips`), late fusion of two modalities' posteriors (:mod:`.fusion`), and the
modality comparison and the crowd's accuracy per group (:mod:`.modalities`)."""
