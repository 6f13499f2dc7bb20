-- Argo CD health check for MfaRecallPolicy (mfarecall.io/v1alpha1), from its status as the
-- operator writes it: Progressing until the operator has read this generation, Degraded with
-- Ready's message when the policy cannot take signals (CEL that does not compile, a Secret
-- missing or too short), Suspended when spec.suspend is set, Healthy otherwise, saying what it
-- has done. Install it under resource.customizations.health.mfarecall.io_MfaRecallPolicy in
-- argocd-cm (charts/mfa-recall-operator/argocd/README.md).
local hs = { status = "Progressing", message = "waiting for the operator" }
local status = obj.status
if status == nil or status.observedGeneration == nil or (obj.metadata.generation ~= nil and status.observedGeneration < obj.metadata.generation) then
  return hs
end
local ready = nil
for _, c in ipairs(status.conditions or {}) do
  if c.type == "Ready" then
    ready = c
  end
end
if ready == nil then
  return hs
end
if ready.status ~= "True" then
  hs.status = "Degraded"
  hs.message = ready.message
  return hs
end
local done = tostring(status.signals or 0) .. " signals, " .. tostring(status.recallsCreated or 0) .. " recalls started"
if status.lastRecall ~= nil then
  done = done .. ", the last " .. status.lastRecall
end
if obj.spec ~= nil and obj.spec.suspend then
  hs.status = "Suspended"
  hs.message = "signals are counted but start nothing (spec.suspend); " .. done
else
  hs.status = "Healthy"
  hs.message = done
end
return hs
