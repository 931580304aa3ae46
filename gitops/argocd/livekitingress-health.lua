-- Argo CD health check for LiveKitIngress (ingress.lkop.dev/v1alpha1).
--
-- Install it as the argocd-cm key
--   resource.customizations.health.ingress.lkop.dev_LiveKitIngress
-- (docs/gitops.md). Argo CD runs it in gopher-lua (Lua 5.1) with the live object as the
-- global `obj` and, for a script from argocd-cm, only the base and table libraries (and a
-- reduced os): no string or math library, so this script uses the language and base functions.
--
-- What it answers for each state, and why: docs/gitops.md, "Health in Argo CD". (Argo CD waits
-- on Progressing in a sync wave and fails a multi-wave sync on Degraded.)

local function condition(status, kind)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function assess()
  local status = obj.status
  local generation = obj.metadata.generation
  local ready = status and condition(status, "Ready")
  if ready == nil or status.observedGeneration ~= generation then
    return "Progressing", "waiting for the operator to reconcile generation " .. tostring(generation)
  end
  if ready.status ~= "True" then
    if ready.reason == "StreamKeySecretMissing" then
      -- The operator retries; a Secret made in the same sync (External Secrets, Sealed Secrets)
      -- appears seconds later.
      return "Progressing", ready.message
    end
    return "Degraded", tostring(ready.reason) .. ": " .. tostring(ready.message)
  end

  local spec = obj.spec
  local state = status.state or {}
  local endpoint = state.status or "ENDPOINT_INACTIVE"
  if endpoint == "ENDPOINT_ERROR" then
    return "Degraded", state.error or "the last session failed"
  elseif endpoint == "ENDPOINT_BUFFERING" then
    return "Progressing", "session " .. tostring(state.resourceId) .. " is starting"
  elseif endpoint == "ENDPOINT_PUBLISHING" then
    if spec.roomName then
      return "Healthy", "publishing into room " .. spec.roomName
    end
    return "Healthy", "publishing"
  elseif endpoint == "ENDPOINT_COMPLETE" then
    return "Healthy", "the source was pulled to its end"
  elseif endpoint == "ENDPOINT_INACTIVE" then
    if spec.inputType == "URL" then
      if state.resourceId == nil then
        return "Progressing", "the pull starts next"
      end
      return "Healthy", "the pull ended"
    end
    -- Idle until an encoder comes is this ingress's normal life: Healthy, not holding a wave.
    if spec.enabled == false then
      return "Healthy", "disabled (spec.enabled is false)"
    end
    return "Healthy", "ready: waiting for input"
  end
  return "Unknown", "unknown state " .. tostring(endpoint)
end

local hs = {}
hs.status, hs.message = assess()
return hs
