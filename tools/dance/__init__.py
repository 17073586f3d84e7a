"""The synthetic dance world behind tools/synthetic_dance.py.

motion.py    choreography: where the dancer stands, faces and how the joints move
body.py      the 3-D body posed and projected: drawing points and OpenPose keypoints
detector.py  what a pose detector makes of the keypoints: jitter, drop-outs, swaps
render.py    pixels: the studio and dancer, and Everybody-Dance-Now style labels
"""
