-- Argo CD health of a solgrid StakePosition (solgrid.dev/v1alpha1), from its phase:
-- Progressing while the stake is being locked or unbonds, Healthy when active or
-- withdrawn, Degraded when slashed. docs/gitops.md.
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
if phase == "Active" or phase == "Withdrawn" then
  hs.status = "Healthy"
elseif phase == "Slashed" then
  hs.status = "Degraded"
end
hs.message = phase .. ": " .. (st.message or "")
return hs
