"""Face front end: detect + 68 landmarks, face tracks, FFHQ quads smoothed over time, crop, mask, paste.

Two streaming passes per video: pass 1 (`align_video`: one face; `align_video_faces`: every person, see
`dva.face.tracks`) frames -> landmarks -> `FaceTrack` -> quads, kept as an `AlignedTrack`; pass 2 frames ->
`iter_crops`. `dva.face.crop_video.crop_video` runs both and writes the crop
video. After editing, `face_mask` + `paste_face` put each crop back into its original frame (`paste_faces` for
several faces in one frame, nearer ones kept on top).
"""

from dva.face.align import quad_axes, quads_from_axes, track_quads
from dva.face.config import FaceConfig, load_face_config
from dva.face.crop_video import align_video, align_video_faces
from dva.face.landmarker import DetectedFace, FaceLandmarker, build_landmarker
from dva.face.mask import Masker, face_mask, feather, landmark_hull_mask, landmark_hull_region
from dva.face.paste import FaceInFrame, paste_face, paste_faces
from dva.face.record import AlignedTrack
from dva.face.smooth import smooth_track
from dva.face.track import FaceTrack, FrameStatus, select_track, track_faces
from dva.face.warp import crop_face, crop_matrix, iter_crops, to_crop_coords

__all__ = [
    "AlignedTrack", "DetectedFace", "FaceConfig", "FaceInFrame", "FaceLandmarker", "FaceTrack", "FrameStatus",
    "Masker", "align_video", "align_video_faces", "build_landmarker", "crop_face", "crop_matrix", "face_mask",
    "feather", "iter_crops", "landmark_hull_mask", "landmark_hull_region", "load_face_config", "paste_face",
    "paste_faces", "quad_axes", "quads_from_axes", "select_track", "smooth_track", "to_crop_coords", "track_faces",
    "track_quads",
]
