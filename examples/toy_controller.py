"""A TOY controller for ``glucotwin trial --controller examples.toy_controller:ToyController``.

Proportional basal on CGM: the programmed basal, raised by 2 % per mg/dL above 140 mg/dL and
cut to zero at 90 mg/dL, capped at 4 times the programmed basal, never a bolus. It shows the
shape of a user's controller, nothing more: it is not a treatment and it runs, like every
controller given as MODULE:ATTR, without glucotwin's safety supervisor.
"""

from simglucose.controller.base import Action, Controller


class ToyController(Controller):
    TARGET_MG_DL = 140.0
    GAIN_PER_MG_DL = 0.02  # +2 % of the programmed basal per mg/dL above target
    MAX_FACTOR = 4.0

    def __init__(self, profile):
        # glucotwin passes `profile` (the clinical profile) because the signature asks for it
        super().__init__(init_state=None)
        self.basal_u_per_min = profile.basal_u_per_h_at(0) / 60.0  # simglucose actions are in U/min

    def policy(self, observation, reward, done, **info):
        cgm = observation.CGM
        if cgm < 90.0:
            return Action(basal=0.0, bolus=0.0)
        factor = min(max(1.0 + self.GAIN_PER_MG_DL * (cgm - self.TARGET_MG_DL), 0.0), self.MAX_FACTOR)
        return Action(basal=self.basal_u_per_min * factor, bolus=0.0)

    def reset(self):
        pass  # no state
