-- Argo CD health of a solgrid GpuNode (solgrid.dev/v1alpha1), from its phase:
-- Healthy when Active, Progressing while new or being verified, Suspended while
-- draining (spec.draining or a cordoned Node: no new jobs, on purpose), Degraded
-- when offline (no heartbeat) or slashed (caught cheating). docs/gitops.md.
local hs = { status = "Progressing", message = "waiting for the operator" }
if obj.status == nil then
  return hs
end
local st = obj.status
local gen = obj.metadata.generation
if gen ~= nil and st.observedGeneration ~= nil and st.observedGeneration < gen then
  hs.message = "the operator has not yet seen generation " .. tostring(gen)
  return hs
end
local phase = st.phase or "Pending"
local message = phase
if st.conditions ~= nil then
  for _, c in ipairs(st.conditions) do
    if c.type == "Ready" and c.message ~= nil and c.message ~= "" then
      message = phase .. ": " .. c.message
    end
  end
end
if phase == "Active" then
  hs.status = "Healthy"
elseif phase == "Draining" then
  hs.status = "Suspended"
elseif phase == "Offline" or phase == "Slashed" then
  hs.status = "Degraded"
end
hs.message = message
return hs
