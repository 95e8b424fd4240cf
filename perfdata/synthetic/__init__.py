"""Synthetic scenes with exact ground truth (DESIGN.md section 4), rendered analytically, no download.

In memory (other stages fit these directly)::

    from perfdata.synthetic import make_object_scene, make_room_scene, write_scene
    scene = make_object_scene(seed=0, n_views=24, size=64, shape="torus")  # a perfdata.scene.Scene
    frame = scene.frames[0]   # image (64, 64, 3) float32, depth (64, 64) float32 metres, mask bool, labels int32
    write_scene(scene, "out/obj_torus")                                        # transforms.json form, atomic

Object scenes (CO3D-like): `class_name` is the shape class, `label_names` = ("background", *SHAPE_CLASSES) with
the ground disc 0, the object 1 + class index and -1 (depth 0) where rays hit nothing; masks cover the object
only; `background` is "white" or "black" and `meta["background_color"]` its RGB. Room scenes (ScanNet-like):
`label_names` = ROOM_LABEL_NAMES, every pixel has depth and a label, masks cover the furniture. Frames are all
"train", K / c2w in OpenCV axes, `world_from_grid` covers `meta["bounds"]`, and `meta["seed"]` records the seed.
"""

from perfdata.synthetic.objects import OBJECT_LABEL_NAMES, SHAPE_CLASSES, ObjectSceneConfig, make_object_scene
from perfdata.synthetic.rooms import ROOM_LABEL_NAMES, RoomSceneConfig, make_room_scene
from perfdata.synthetic.writer import SynthConfig, plan_scenes, scene_seed, synthesize, write_scene

__all__ = [
    "OBJECT_LABEL_NAMES",
    "ROOM_LABEL_NAMES",
    "SHAPE_CLASSES",
    "ObjectSceneConfig",
    "RoomSceneConfig",
    "SynthConfig",
    "make_object_scene",
    "make_room_scene",
    "plan_scenes",
    "scene_seed",
    "synthesize",
    "write_scene",
]
