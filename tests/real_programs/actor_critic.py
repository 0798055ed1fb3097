"""Adapted from pytorch/examples reinforcement_learning/actor_critic.py.

gym is replaced by ``TinyCartPole``, a deterministic CartPole-like environment
written here with numpy (the classic cart-pole equations, seeded resets, at most
20 steps per episode); hidden size 32; 3 episodes, one optimizer step after
each.

A tracer must get right: a ``Policy`` with a shared ``affine1`` layer feeding an
``action_head`` (softmax) and a ``value_head``, one forward per environment step
on a state from ``torch.from_numpy(state).float()``, ``Categorical`` sampling and
``log_prob``, the graph pieces kept across steps in a ``SavedAction``
namedtuple list on the module, returns computed in Python with ``gamma``,
``torch.tensor(returns)`` normalised with ``eps = np.finfo(np.float32).eps.item()``,
``value.item()`` for the advantage, ``F.smooth_l1_loss`` for the value,
``torch.stack(policy_losses).sum() + torch.stack(value_losses).sum()``, ONE
backward through all the per-step graphs of an episode, Adam, and
``del model.rewards[:]`` clearing the lists.
"""
import math
from collections import namedtuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.distributions import Categorical

torch.manual_seed(0)

gamma = 0.99
log_interval = 1
SavedAction = namedtuple('SavedAction', ['log_prob', 'value'])


class TinyCartPole:
    """CartPole-v1's dynamics (Euler integration), without gym."""

    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    length = 0.5
    force_mag = 10.0
    tau = 0.02
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def __init__(self, max_steps=20):
        self.max_steps = max_steps
        self.np_random = np.random.RandomState(0)
        self.state = None
        self.steps = 0

    def reset(self, seed=None):
        if seed is not None:
            self.np_random = np.random.RandomState(seed)
        self.state = self.np_random.uniform(low=-0.05, high=0.05, size=(4,))
        self.steps = 0
        return np.array(self.state, dtype=np.float32), {}

    def step(self, action):
        x, x_dot, theta, theta_dot = self.state
        force = self.force_mag if action == 1 else -self.force_mag
        costheta = math.cos(theta)
        sintheta = math.sin(theta)
        total_mass = self.masspole + self.masscart
        polemass_length = self.masspole * self.length
        temp = (force + polemass_length * theta_dot ** 2 * sintheta) / total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta ** 2 / total_mass))
        xacc = temp - polemass_length * thetaacc * costheta / total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        self.state = (x, x_dot, theta, theta_dot)
        self.steps += 1
        terminated = bool(x < -self.x_threshold or x > self.x_threshold
                          or theta < -self.theta_threshold_radians or theta > self.theta_threshold_radians)
        truncated = self.steps >= self.max_steps
        return np.array(self.state, dtype=np.float32), 1.0, terminated, truncated, {}


env = TinyCartPole(max_steps=20)
env.reset(seed=543)


class Policy(nn.Module):
    """
    implements both actor and critic in one model
    """

    def __init__(self):
        super().__init__()
        self.affine1 = nn.Linear(4, 32)

        # actor's layer
        self.action_head = nn.Linear(32, 2)

        # critic's layer
        self.value_head = nn.Linear(32, 1)

        # action & reward buffer
        self.saved_actions = []
        self.rewards = []

    def forward(self, x):
        """
        forward of both actor and critic
        """
        x = F.relu(self.affine1(x))

        # actor: choses action to take from state s_t
        # by returning probability of each action
        action_prob = F.softmax(self.action_head(x), dim=-1)

        # critic: evaluates being in the state s_t
        state_values = self.value_head(x)

        # return values for both actor and critic as a tuple of 2 values:
        # 1. a list with the probability of each action over the action space
        # 2. the value from state s_t
        return action_prob, state_values


model = Policy()
optimizer = optim.Adam(model.parameters(), lr=3e-2)
eps = np.finfo(np.float32).eps.item()


def select_action(state):
    state = torch.from_numpy(state).float()
    probs, state_value = model(state)

    # create a categorical distribution over the list of probabilities of actions
    m = Categorical(probs)

    # and sample an action using the distribution
    action = m.sample()

    # save to action buffer
    model.saved_actions.append(SavedAction(m.log_prob(action), state_value))

    # the action to take (left or right)
    return action.item()


def finish_episode():
    """
    Training code. Calculates actor and critic loss and performs backprop.
    """
    R = 0
    saved_actions = model.saved_actions
    policy_losses = []  # list to save actor (policy) loss
    value_losses = []  # list to save critic (value) loss
    returns = []  # list to save the true values

    # calculate the true value using rewards returned from the environment
    for r in model.rewards[::-1]:
        # calculate the discounted value
        R = r + gamma * R
        returns.insert(0, R)

    returns = torch.tensor(returns)
    returns = (returns - returns.mean()) / (returns.std() + eps)

    for (log_prob, value), R in zip(saved_actions, returns):
        advantage = R - value.item()

        # calculate actor (policy) loss
        policy_losses.append(-log_prob * advantage)

        # calculate critic (value) loss using L1 smooth loss
        value_losses.append(F.smooth_l1_loss(value, torch.tensor([R])))

    # reset gradients
    optimizer.zero_grad()

    # sum up all the values of policy_losses and value_losses
    loss = torch.stack(policy_losses).sum() + torch.stack(value_losses).sum()

    # perform backprop
    loss.backward()
    optimizer.step()

    # reset rewards and action buffer
    del model.rewards[:]
    del model.saved_actions[:]
    return loss.item()


running_reward = 10

# run 3 episodes
for i_episode in range(1, 4):

    # reset environment and episode reward
    state, _ = env.reset()
    ep_reward = 0

    # for each episode, only run 20 steps so that we don't
    # infinite loop while learning
    for t in range(1, 10000):

        # select action from policy
        action = select_action(state)

        # take the action
        state, reward, terminated, truncated, _ = env.step(action)

        model.rewards.append(reward)
        ep_reward += reward
        if terminated or truncated:
            break

    # update cumulative reward
    running_reward = 0.05 * ep_reward + (1 - 0.05) * running_reward

    # perform backprop
    loss = finish_episode()

    # log results
    if i_episode % log_interval == 0:
        print(f'Episode {i_episode}\tLast reward: {ep_reward:.2f}\tAverage reward: {running_reward:.2f}'
              f'\tloss {loss:.6f}')
