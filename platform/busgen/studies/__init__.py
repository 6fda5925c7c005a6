"""Studies: research protocols built on the suites, each readable top to bottom.

multisite/ (target-only vs foundation + few-shot vs joint generators, in-site and cross-site),
tradeoff/ (CPSample's privacy-utility sweep), fewshot (adapt with several K and score each),
precision (does the fast sampler move the image distribution?). A study uses measurements
(`busgen.measure`), suites (`busgen.eval`) and the pipeline stages; nothing below imports it.
"""
