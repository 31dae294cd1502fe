"""Named points of MediaPipe's 478-point face mesh (`qmask.faces` fits it to every face), shared by
the alignment, the plan of an edit, the training holes and the mask renderer."""

# The eye corners: image-left eye (the subject's right) first, then image-right.
EYE_CORNERS = ((33, 133), (362, 263))
# The face's outline (forehead, temples, cheeks, jaw, chin) in order around it.
FACE_OUTLINE = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
# Its lower part, from one ear over the chin to the other.
LOWER_OUTLINE = FACE_OUTLINE[8:29]
# The nose's ridge from between the eyes down to its tip.
NOSE_LINE = (168, 6, 197, 195, 5, 4, 1)
BETWEEN_EYES = NOSE_LINE[0]
NOSE_TIP = NOSE_LINE[-1]
CHIN = 152
# Around the nose from between the eyes to the nostrils: where the stiff nose piece of a respirator
# or the wire of a cloth mask sits.
NOSE_AREA = (168, 6, 188, 412, 114, 343, 129, 358, 64, 294, 98, 327, 2)
