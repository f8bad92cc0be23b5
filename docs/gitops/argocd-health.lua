-- Argo CD health for the mpaas.io kinds (MpaasGateway, DeliveryTask, PushChannel, SyncTopic).
-- Reads the kstatus conditions the operator writes: Ready, Reconciling, Stalled, observedGeneration.
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to handle the latest spec"
  return hs
end
local ready, stalled, reconciling = nil, nil, nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Stalled" then stalled = c end
  if c.type == "Reconciling" then reconciling = c end
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "") .. ": " .. (stalled.message or "")
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = reconciling.message or ""
  return hs
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end
if ready.status == "True" and ready.reason == "AutoPaused" then
  -- A release that held itself on its install failures: someone must look.
  hs.status = "Degraded"
elseif ready.status == "True" and ready.reason == "Paused" then
  hs.status = "Suspended"
elseif ready.status == "True" then
  hs.status = "Healthy"
elseif ready.reason == "NotImplemented" or ready.reason == "RolledBack" then
  -- Valid and handled as far as the platform goes today (nothing serves it yet), or withdrawn on purpose.
  hs.status = "Suspended"
elseif ready.reason == "Unavailable" or ready.reason == "Degraded" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
return hs
