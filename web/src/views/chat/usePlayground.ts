import { computed, reactive, ref, shallowRef, watch } from 'vue'
import { isEnabled } from '@/utils/format'
import { ElMessage, ElMessageBox } from 'element-plus'
import { errorMessage } from '@/api/errors'
import * as chatApi from '@/api/chat'
import { listAllModelConfigs } from '@/api/modelConfigs'
import { listAllSystemPrompts } from '@/api/prompts'
import type { StreamEvent } from '@/api/sse'
import type { ChatMessage, ChatSession, ModelConfig, SystemPrompt } from '@/api/types'
import { applyAnswerEvent, emptyAnswer, type AnswerState } from '@/composables/useChatStream'
import { t } from '@/locales'

export interface UiMessage extends AnswerState {
  /** Stable key for rendering; the server id arrives with `meta`. */
  key: string
  id: number | null
  role: 'user' | 'assistant' | 'system' | 'error'
}

const CONFIG_KEY = 'workbench.playground.config'
let keySeq = 0
const newKey = () => `m${++keySeq}`

function fromServer(m: ChatMessage): UiMessage {
  return {
    key: newKey(),
    id: m.id,
    role: m.role,
    content: m.content ?? '',
    reasoning: m.reasoning ?? m.thinking ?? '',
    streaming: false,
    finishReason: m.finish_reason ?? null,
    metrics: m.metrics ?? null,
    usage: null,
    error: m.role === 'error' ? m.content : null,
    model: m.model_name ?? null,
  }
}

function userMessage(content: string): UiMessage {
  return { ...emptyAnswer(), streaming: false, key: newKey(), id: null, role: 'user', content }
}

function assistantPlaceholder(): UiMessage {
  return { ...emptyAnswer(), key: newKey(), id: null, role: 'assistant' }
}

export function usePlayground() {
  // sessions
  const sessions = shallowRef<ChatSession[]>([])
  const sessionsLoading = ref(false)
  const sessionsError = ref<string | null>(null)
  const sessionQuery = ref('')
  const activeId = ref<number | null>(null)
  const activeSession = computed(() => sessions.value.find((s) => s.id === activeId.value) ?? null)

  // messages
  const messages = ref<UiMessage[]>([])
  const messagesLoading = ref(false)
  const messagesError = ref<string | null>(null)

  // pickers
  const configs = shallowRef<ModelConfig[]>([])
  const configsError = ref<string | null>(null)
  const configId = ref<string>(localStorage.getItem(CONFIG_KEY) ?? '')
  const prompts = shallowRef<SystemPrompt[]>([])
  /** '' = none, 'custom' = typed below, otherwise a system prompt id. */
  const promptChoice = ref<string>('')
  const customPrompt = ref('')

  // composer and stream
  const input = ref('')
  const streaming = ref(false)
  const stopping = ref(false)
  let controller: AbortController | null = null
  /** Bumped on every streamed delta so the view can follow with auto-scroll. */
  const tick = ref(0)

  watch(configId, (v) => v && localStorage.setItem(CONFIG_KEY, v))

  const enabledConfigs = computed(() => configs.value.filter((c) => isEnabled(c.status)))

  async function loadSessions(): Promise<void> {
    sessionsLoading.value = true
    sessionsError.value = null
    try {
      const page = await chatApi.listSessions({ q: sessionQuery.value || undefined, page_size: 100 })
      sessions.value = page.items
    } catch (err) {
      sessionsError.value = errorMessage(err)
    } finally {
      sessionsLoading.value = false
    }
  }

  async function loadPickers(): Promise<void> {
    configsError.value = null
    const [c, p] = await Promise.allSettled([listAllModelConfigs(), listAllSystemPrompts()])
    if (c.status === 'fulfilled') {
      configs.value = c.value
      const active = enabledConfigs.value
      if (!active.some((x) => x.id === configId.value)) configId.value = active[0]?.id ?? ''
    } else configsError.value = errorMessage(c.reason)
    if (p.status === 'fulfilled') {
      prompts.value = p.value
      const def = p.value.find((x) => x.is_default)
      if (def && promptChoice.value === '') promptChoice.value = String(def.id)
    }
  }

  async function selectSession(id: number): Promise<void> {
    if (streaming.value) return
    activeId.value = id
    messagesLoading.value = true
    messagesError.value = null
    messages.value = []
    try {
      const list = await chatApi.listMessages(id)
      if (activeId.value === id) messages.value = list.map(fromServer)
    } catch (err) {
      messagesError.value = errorMessage(err)
    } finally {
      messagesLoading.value = false
    }
  }

  async function newSession(): Promise<void> {
    if (streaming.value) return
    try {
      const s = await chatApi.createSession()
      sessions.value = [s, ...sessions.value]
      activeId.value = s.id
      messages.value = []
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  async function renameSession(s: ChatSession): Promise<void> {
    const answer = await ElMessageBox.prompt(t('chat.renamePrompt'), t('chat.rename'), {
      inputValue: s.title,
      inputValidator: (v: string) => (v.trim() ? true : t('chat.titleRequired')),
    }).catch(() => null)
    if (!answer) return
    try {
      const updated = await chatApi.renameSession(s.id, answer.value.trim())
      sessions.value = sessions.value.map((x) => (x.id === s.id ? { ...x, ...updated } : x))
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  async function deleteSession(s: ChatSession): Promise<void> {
    const ok = await ElMessageBox.confirm(t('chat.confirmDelete', { title: s.title }), t('common.confirm'), {
      type: 'warning',
    }).catch(() => false)
    if (!ok) return
    try {
      await chatApi.deleteSession(s.id)
      sessions.value = sessions.value.filter((x) => x.id !== s.id)
      if (activeId.value === s.id) {
        activeId.value = null
        messages.value = []
      }
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  /** Runs one streamed answer into `answer` (a reactive element of `messages`). */
  async function runStream(
    answer: UiMessage,
    userMsg: UiMessage | null,
    start: (onEvent: (ev: StreamEvent) => void, signal: AbortSignal) => Promise<{ aborted: boolean }>,
  ): Promise<void> {
    controller = new AbortController()
    streaming.value = true
    stopping.value = false
    const onEvent = (ev: StreamEvent) => {
      if (ev.event === 'meta') {
        const d = ev.data
        if (userMsg && typeof d.user_message_id === 'number') userMsg.id = d.user_message_id
        if (typeof d.assistant_message_id === 'number') answer.id = d.assistant_message_id
        if (typeof d.model === 'string') answer.model = d.model
        if (typeof d.session_id === 'number' && activeId.value === null) activeId.value = d.session_id
      } else {
        applyAnswerEvent(answer, ev)
      }
      tick.value++
    }
    try {
      const { aborted } = await start(onEvent, controller.signal)
      if (aborted && answer.streaming) answer.finishReason = 'stopped'
      else if (answer.streaming && !answer.finishReason) answer.finishReason = answer.error ? 'error' : 'stop'
    } catch (err) {
      answer.error = errorMessage(err)
      answer.finishReason = 'error'
    } finally {
      answer.streaming = false
      streaming.value = false
      stopping.value = false
      controller = null
      tick.value++
    }
  }

  function systemPromptFields(): { system_prompt_id?: number; system_prompt?: string } {
    if (promptChoice.value === 'custom') return customPrompt.value.trim() ? { system_prompt: customPrompt.value } : {}
    if (promptChoice.value) return { system_prompt_id: Number(promptChoice.value) }
    return {}
  }

  function requireConfig(): string | null {
    if (!configId.value) {
      ElMessage.warning(t('chat.pickModel'))
      return null
    }
    return configId.value
  }

  async function send(): Promise<void> {
    const content = input.value.trim()
    const cfg = requireConfig()
    if (!content || !cfg || streaming.value) return
    if (activeId.value === null) {
      await newSession()
      if (activeId.value === null) return
    }
    const sessionId = activeId.value
    input.value = ''
    messages.value.push(userMessage(content), assistantPlaceholder())
    const userMsg = messages.value[messages.value.length - 2]!
    const answer = messages.value[messages.value.length - 1]!
    const firstMessage = messages.value.length === 2
    await runStream(answer, userMsg, (onEvent, signal) =>
      chatApi.streamMessage(sessionId, { content, model_config_id: cfg, ...systemPromptFields() }, onEvent, signal),
    )
    // The server titles a session from its first message.
    if (firstMessage) void loadSessions()
  }

  async function regenerate(): Promise<void> {
    if (activeId.value === null || streaming.value) return
    const sessionId = activeId.value
    const last = messages.value[messages.value.length - 1]
    if (last && last.role !== 'user') messages.value.pop()
    messages.value.push(assistantPlaceholder())
    const answer = messages.value[messages.value.length - 1]!
    await runStream(answer, null, (onEvent, signal) =>
      chatApi.streamRegenerate(sessionId, configId.value ? { model_config_id: configId.value } : {}, onEvent, signal),
    )
  }

  // edit-and-resend
  const editingKey = ref<string | null>(null)
  const editText = ref('')

  function startEdit(m: UiMessage): void {
    if (streaming.value || m.id === null) return
    editingKey.value = m.key
    editText.value = m.content
  }
  function cancelEdit(): void {
    editingKey.value = null
  }

  async function submitEdit(m: UiMessage): Promise<void> {
    const content = editText.value.trim()
    const cfg = requireConfig()
    if (!content || !cfg || activeId.value === null || m.id === null || streaming.value) return
    const sessionId = activeId.value
    const messageId = m.id
    const idx = messages.value.findIndex((x) => x.key === m.key)
    if (idx < 0) return
    editingKey.value = null
    // Later messages are replaced by the new answer.
    messages.value.splice(idx + 1)
    const userMsg = messages.value[idx]!
    userMsg.content = content
    messages.value.push(assistantPlaceholder())
    const answer = messages.value[messages.value.length - 1]!
    await runStream(answer, userMsg, (onEvent, signal) =>
      chatApi.streamEdit(sessionId, messageId, { content, model_config_id: cfg }, onEvent, signal),
    )
  }

  /** Asks the server to stop (it saves the partial answer as stopped); drops the connection if it lingers. */
  async function stop(): Promise<void> {
    if (!streaming.value || activeId.value === null) return
    stopping.value = true
    const ctl = controller
    try {
      await chatApi.stopSession(activeId.value)
    } catch {
      /* the abort below stops it anyway */
    }
    setTimeout(() => {
      if (controller === ctl) ctl?.abort()
    }, 1500)
  }

  function abort(): void {
    controller?.abort()
  }

  async function exportAs(format: 'md' | 'json'): Promise<void> {
    if (activeId.value === null) return
    try {
      await chatApi.exportSession(activeId.value, format)
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  async function copy(text: string): Promise<void> {
    try {
      await navigator.clipboard.writeText(text)
      ElMessage.success(t('common.copied'))
    } catch {
      ElMessage.error(t('common.copyFailed'))
    }
  }

  const lastAssistantKey = computed(() => {
    const last = messages.value[messages.value.length - 1]
    return last && last.role !== 'user' ? last.key : null
  })

  return reactive({
    sessions,
    sessionsLoading,
    sessionsError,
    sessionQuery,
    activeId,
    activeSession,
    messages,
    messagesLoading,
    messagesError,
    configs,
    enabledConfigs,
    configsError,
    configId,
    prompts,
    promptChoice,
    customPrompt,
    input,
    streaming,
    stopping,
    tick,
    editingKey,
    editText,
    lastAssistantKey,
    loadSessions,
    loadPickers,
    selectSession,
    newSession,
    renameSession,
    deleteSession,
    send,
    regenerate,
    startEdit,
    cancelEdit,
    submitEdit,
    stop,
    abort,
    exportAs,
    copy,
  })
}
