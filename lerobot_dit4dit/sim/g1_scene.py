"""The simulated G1 scene: Unitree's 29-DoF MuJoCo model on a fixed base, a table and a button.

The robot model is Unitree's BSD-3 G1 MJCF (through MuJoCo Menagerie), taken from the PyPI wheel
`mjlab==1.6.0` (see `lerobot_dit4dit.sim.assets`). Two variants share one scene:

- ``capsules``: the model's own collision capsules rendered as the body (committed here, no download);
  the faster one to render, used by the tests.
- ``meshes``: Unitree's 35 STL meshes (fetched from PyPI); slower to render (docs/unitree_g1_sim.md).

The hinge order of the MJCF equals LeRobot's `G1_29_JointIndex`, so `qpos[i]` is joint `i` of the
robot protocol. The pelvis is welded at z = 0.793 m (the model's free joint is removed): the task is
table-top reaching, and LeRobot's stock gains cannot balance the legs.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from .assets import model_path

NUM_JOINTS = 29

# Rotor armature (kg m^2) and effort limit (N m) per Unitree actuator, from mjlab 1.6.0's
# `asset_zoo/robots/unitree_g1/g1_constants.py` (two-stage planetary reflected inertia). The armature
# keeps the explicit PD stable at 500 Hz on the light wrist links.
_ACTUATORS = {
    "5020": (0.003609725, 25.0),
    "7520_14": (0.010177520, 88.0),
    "7520_22": (0.025101925, 139.0),
    "4010": (0.00425, 5.0),
    "5020x2": (0.00721945, 50.0),  # waist pitch/roll and ankles: two 5020s through a linkage
}
_JOINT_ACTUATOR = {
    "hip_pitch": "7520_14",
    "hip_roll": "7520_22",
    "hip_yaw": "7520_14",
    "knee": "7520_22",
    "ankle_pitch": "5020x2",
    "ankle_roll": "5020x2",
    "waist_yaw": "7520_14",
    "waist_roll": "5020x2",
    "waist_pitch": "5020x2",
    "shoulder_pitch": "5020",
    "shoulder_roll": "5020",
    "shoulder_yaw": "5020",
    "elbow": "5020",
    "wrist_roll": "5020",
    "wrist_pitch": "4010",
    "wrist_yaw": "4010",
}

# Scene geometry (metres, world frame; x forward, y left, z up; the pelvis is at (0, 0, 0.793)).
TABLE_TOP_Z = 0.80
TABLE_CENTER = (0.42, -0.12)
TABLE_HALF = (0.16, 0.26)
BUTTON_RADIUS = 0.04
BUTTON_HALF_HEIGHT = 0.008
# Where the button may spawn: a region in front of the right arm that its fingertip reaches from the
# head-camera view (checked by tests/test_g1.py with the scripted expert).
BUTTON_X = (0.30, 0.42)
BUTTON_Y = (-0.30, -0.10)
# A press: the fingertip within this horizontal distance of the button's centre and this height above
# the table top.
PRESS_RADIUS = 0.04
PRESS_HEIGHT = 0.055
# The head camera, on the torso link, aimed at the button region (56 degrees down, 37 to the robot's right,
# 50-degree field of view). A straight-ahead 75-degree view spent a third of a 64-px image on the sky and
# showed the 8-cm button as about 6 px; a policy trained on it could not place the button (run 6 in
# docs/unitree_g1_sim.md). Here the button is about 10 px wide and the hand's path stays in view.
HEAD_CAMERA = "head_camera"
HEAD_CAMERA_POS = (0.10, 0.0, 0.46)
HEAD_CAMERA_FOVY = 50.0
HEAD_CAMERA_TILT_DEG = 56.0
HEAD_CAMERA_YAW_DEG = -37.0
FINGERTIP_SITE = "right_fingertip"


@dataclass(frozen=True)
class JointTable:
    """Per-joint facts of the model, in G1_29_JointIndex order (29 entries each)."""

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    effort: np.ndarray


def _actuator_kind(joint_name: str) -> str:
    stem = joint_name.removesuffix("_joint").removeprefix("left_").removeprefix("right_")
    return _JOINT_ACTUATOR[stem]


def build_spec(variant: str = "capsules") -> mujoco.MjSpec:
    """The scene as an editable MjSpec: robot on a fixed base, motors, table, button, camera, fingertip."""
    spec = mujoco.MjSpec.from_file(str(model_path(variant)))
    spec.option.timestep = 0.002  # 500 Hz
    spec.visual.global_.offwidth = 640
    spec.visual.global_.offheight = 480

    for joint in list(spec.joints):
        if joint.type == mujoco.mjtJoint.mjJNT_FREE:
            spec.delete(joint)
    hinges = [j for j in spec.joints if j.type == mujoco.mjtJoint.mjJNT_HINGE]
    if len(hinges) != NUM_JOINTS:
        raise ValueError(f"expected {NUM_JOINTS} hinge joints in the G1 model, found {len(hinges)}")
    for joint in hinges:
        armature, effort = _ACTUATORS[_actuator_kind(joint.name)]
        joint.armature = armature
        joint.damping = [0.05, 0, 0]
        motor = spec.add_actuator(name=joint.name.removesuffix("_joint"), target=joint.name)
        motor.trntype = mujoco.mjtTrn.mjTRN_JOINT
        motor.ctrllimited = 1
        motor.ctrlrange = [-effort, effort]

    for geom in spec.geoms:
        if geom.classname.name in ("collision", "foot_capsule"):
            if variant == "capsules":  # the capsules are the visible body
                geom.group = 0
                geom.rgba = [0.72, 0.72, 0.75, 1.0]
        elif geom.type == mujoco.mjtGeom.mjGEOM_MESH:
            geom.group = 0

    world = spec.worldbody
    floor = world.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.05], rgba=[0.35, 0.38, 0.42, 1])
    floor.name = "floor"
    light = world.add_light(pos=[0.3, 0.0, 2.5], dir=[0, 0, -1], castshadow=False)
    light.diffuse = [0.8, 0.8, 0.8]
    world.add_light(pos=[1.5, -1.0, 2.0], dir=[-0.6, 0.4, -0.7], castshadow=False).diffuse = [0.3, 0.3, 0.3]

    table = world.add_body(name="table", pos=[*TABLE_CENTER, TABLE_TOP_Z - 0.025])
    table.add_geom(
        name="table_top", type=mujoco.mjtGeom.mjGEOM_BOX, size=[*TABLE_HALF, 0.025], rgba=[0.55, 0.42, 0.3, 1]
    )
    # The button is a mocap body: it respawns by moving, and never pushes back on the hand.
    button = world.add_body(name="button", mocap=True, pos=[0.36, -0.2, TABLE_TOP_Z + BUTTON_HALF_HEIGHT])
    button.add_geom(
        name="button",
        type=mujoco.mjtGeom.mjGEOM_CYLINDER,
        size=[BUTTON_RADIUS, BUTTON_HALF_HEIGHT, 0],
        rgba=[0.9, 0.1, 0.1, 1],
        contype=0,
        conaffinity=0,
    )

    torso = spec.body("torso_link")
    # Camera looks along its -z: x = image right, y = image up; tilted down, then turned about the torso's z.
    tilt = np.deg2rad(HEAD_CAMERA_TILT_DEG)
    yaw = np.deg2rad(HEAD_CAMERA_YAW_DEG)
    torso.add_camera(
        name=HEAD_CAMERA,
        pos=list(HEAD_CAMERA_POS),
        xyaxes=[
            np.sin(yaw),
            -np.cos(yaw),
            0,
            np.sin(tilt) * np.cos(yaw),
            np.sin(tilt) * np.sin(yaw),
            np.cos(tilt),
        ],
        fovy=HEAD_CAMERA_FOVY,
    )
    hand = spec.body("right_wrist_yaw_link")
    hand.add_site(name=FINGERTIP_SITE, pos=[0.16, 0.02, 0.0], size=[0.01, 0, 0])
    return spec


def build_model(variant: str = "capsules") -> mujoco.MjModel:
    return build_spec(variant).compile()


def joint_table(model: mujoco.MjModel) -> JointTable:
    """Names, position limits and effort limits of the 29 hinges, in protocol order."""
    names = tuple(model.joint(i).name for i in range(NUM_JOINTS))
    lower = model.jnt_range[:NUM_JOINTS, 0].copy()
    upper = model.jnt_range[:NUM_JOINTS, 1].copy()
    effort = model.actuator_ctrlrange[:NUM_JOINTS, 1].copy()
    return JointTable(names, lower, upper, effort)


def sample_button(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    """A button position (x, y, z) in the reachable region, at least 8 cm from `avoid` when given."""
    for _ in range(100):
        xy = np.array([rng.uniform(*BUTTON_X), rng.uniform(*BUTTON_Y)])
        if avoid is None or np.linalg.norm(xy - avoid[:2]) >= 0.08:
            break
    return np.array([xy[0], xy[1], TABLE_TOP_Z + BUTTON_HALF_HEIGHT])


def is_press(fingertip: np.ndarray, button: np.ndarray) -> bool:
    """Whether the fingertip (x, y, z) is on the button (x, y, z)."""
    return bool(
        np.linalg.norm(fingertip[:2] - button[:2]) < PRESS_RADIUS
        and fingertip[2] < TABLE_TOP_Z + PRESS_HEIGHT
    )
