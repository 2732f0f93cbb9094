-- Argo CD health of a solgrid ComputeJob (solgrid.dev/v1alpha1), from its phase:
-- Progressing until it is settled, Degraded when it failed (its spec is invalid,
-- a worker failed or was lost, the gang never formed, settlement was refused),
-- Suspended when it was cancelled, Healthy once settled. docs/gitops.md.
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
local function condition(type)
  if st.conditions ~= nil then
    for _, c in ipairs(st.conditions) do
      if c.type == type then
        return c
      end
    end
  end
  return nil
end
local phase = st.phase or "Pending"
local message = st.message or ""
local valid = condition("Valid")
if valid ~= nil and valid.status == "False" then
  return { status = "Degraded", message = "invalid spec: " .. (valid.message or "") }
end
local settled = condition("Settled")
if settled ~= nil and settled.status == "False" and settled.reason == "SettlementRefused" then
  return { status = "Degraded", message = "settlement refused: " .. (settled.message or "") }
end
local complete = condition("Complete")
local why = ""
if complete ~= nil and complete.status == "True" then
  why = complete.reason or ""
end
local failed = phase == "Failed" or (phase == "Settled" and (why == "WorkerFailed" or why == "WorkerLost" or why == "GangTimeout"))
if failed then
  return { status = "Degraded", message = phase .. ": " .. message }
end
if phase == "Cancelled" or (phase == "Settled" and why == "Cancelled") then
  return { status = "Suspended", message = phase .. " (cancelled): " .. message }
end
if phase == "Settled" then
  return { status = "Healthy", message = message }
end
hs.message = phase .. ": " .. message
return hs
