"""Training losses (imported only by `mmrface.train`; inference never imports this package).

basic       L1, pyramid L1 on the decoder's intermediate RGBs
perceptual  VGG16 perceptual + Gram style, LPIPS as a loss
gan         non-saturating logistic GAN, lazy R1
component   eye / mouth crops and their patch discriminators
identity    ArcFace identity loss (only with user-supplied weights)
selfsup     HQ self-reconstruction, re-degradation, unpaired low-pass, mean-teacher pseudo pairs
"""
