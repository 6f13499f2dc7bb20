-- Argo CD health check for MfaRecall (mfarecall.io/v1alpha1), from its status as the operator
-- writes it: Progressing while it starts or revokes, Healthy once every user is dealt with
-- (waiting for re-enrollment, or completed), Degraded with the condition's message when the
-- recall cannot go on or users failed, Suspended when paused, cancelled, planned (mode Plan),
-- waiting for a second person's approval, or when a rollout wave passed a threshold.
-- Install it under resource.customizations.health.mfarecall.io_MfaRecall in argocd-cm
-- (charts/mfa-recall-operator/argocd/README.md).
local hs = { status = "Progressing", message = "waiting for the operator" }
local status = obj.status
if status == nil or status.phase == nil then
  return hs
end
local conditions = {}
for _, c in ipairs(status.conditions or {}) do
  conditions[c.type] = c
end
local ready, degraded = conditions["Ready"], conditions["Degraded"]
local phase = status.phase
local said = (ready and ready.message) or phase
-- Ready's reason is the phase (or Queued) unless something stops the recall: LockoutRisk,
-- BackendAuthFailed, ExclusionGroupNotFound and the like, each with what to change.
local stopped = ready ~= nil and ready.status == "False" and ready.reason ~= phase and ready.reason ~= "Queued"
if phase == "Failed" or stopped then
  hs.status = "Degraded"
  hs.message = said
elseif phase == "Suspended" or phase == "Cancelled" or phase == "Planned" or phase == "AwaitingApproval" or phase == "Paused" then
  hs.status = "Suspended"
  hs.message = said
elseif phase == "AwaitingReEnrollment" or phase == "Completed" then
  if degraded ~= nil and degraded.status == "True" then
    hs.status = "Degraded"
    hs.message = degraded.message
  else
    hs.status = "Healthy"
    hs.message = said
  end
else
  hs.status = "Progressing"
  hs.message = said
end
return hs
